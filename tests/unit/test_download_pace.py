"""The download's deadline, minimum rate and room check, on a fake clock."""

import io

import pytest

from fakes import Clock
from update_agent.config import AgentConfig
from update_agent.errors import AgentError
from update_agent.images.fetch import Pace, _Sink
from update_agent.images.store import room_shortfall

URL = "http://images.example/img"


def sink(pace):
    return _Sink(URL, "/nowhere.part", io.BytesIO(), "sha256", 1 << 30, None, pace)


def source(clock, pieces, step):
    """read1 handing over pieces, the clock moving step seconds before each."""
    pieces = list(pieces)

    def read1(_n):
        clock.now += step
        return pieces.pop(0) if pieces else b""
    return read1


def test_a_source_below_the_minimum_rate_is_abandoned():
    clock = Clock()
    s = sink(Pace(min_rate=100, window_s=10, monotonic=clock))
    with pytest.raises(AgentError) as err:
        s.copy(source(clock, [b"x"] * 1000, 1.0), None)
    message = str(err.value)
    assert URL in message and "1 bytes/s" in message and "download_min_rate = 100" in message
    assert 0 < s.done < 1000  # what came before is kept, for the resume


def test_a_source_at_the_minimum_rate_completes():
    clock = Clock()
    s = sink(Pace(min_rate=100, window_s=10, monotonic=clock))
    s.copy(source(clock, [b"x" * 100] * 50, 1.0), None)
    assert s.done == 5000


def test_a_download_past_its_deadline_is_abandoned_however_fast():
    clock = Clock()
    s = sink(Pace(deadline_s=30, monotonic=clock))
    with pytest.raises(AgentError) as err:
        s.copy(source(clock, [b"x" * 1000] * 100, 1.0), None)
    assert "download_timeout = 30" in str(err.value) and URL in str(err.value)


def test_no_limits_means_no_abandon():
    clock = Clock()
    s = sink(Pace(monotonic=clock))
    s.copy(source(clock, [b"x"] * 100, 3600.0), None)
    assert s.done == 100


def test_room_refusal_names_the_numbers():
    config = AgentConfig(stage_space_margin=100, stage_inode_margin=10)
    why = room_shortfall(1000, 1099, 50, config, "/state/images")
    assert why == ("not enough room to stage the image in /state/images: it needs 1100 bytes "
                   "(1000 for the image + stage_space_margin 100), 1099 are free")
    assert room_shortfall(1000, 1100, 50, config, "/state/images") is None


def test_room_refusal_for_inodes():
    config = AgentConfig(stage_space_margin=0, stage_inode_margin=10)
    assert "needs 14 (4 + stage_inode_margin 10), 13 are free" in room_shortfall(
        1, 10, 13, config, "/s")
    assert room_shortfall(1, 10, None, config, "/s") is None  # no fixed inode count (btrfs)


def test_room_refusal_of_a_local_file_does_not_tell_its_size():
    why = room_shortfall(123456789, 1000, 50, AgentConfig(), "/s", show=False)
    assert "123456789" not in why and "1000 bytes are free" in why
