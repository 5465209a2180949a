from update_agent.cli import main

raise SystemExit(main())
