//! Unit tests of the early-exit stage.
