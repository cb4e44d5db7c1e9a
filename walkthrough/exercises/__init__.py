"""Your implementations: one file per graded exercise, shipped as stubs. `make grade` checks them."""
