"""Budget ladders (package data): the arms of each ladder preset, in the sweep file format."""
