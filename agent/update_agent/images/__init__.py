"""Golden node images: where they are stored and how they are opened."""
