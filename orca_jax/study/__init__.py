"""The mini-Orca study (`make replicate`): explanation tuning against answer imitation, measured."""
