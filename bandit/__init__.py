"""A general contextual-bandit decision engine over Vowpal Wabbit: featurising, sampling,
the decision and reward log, the learner, and policy snapshots. Actions are opaque ids with
feature dictionaries; nothing here knows they are images."""
