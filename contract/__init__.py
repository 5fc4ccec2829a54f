"""What every side of the pipeline agrees on, below all three packages.

``settings`` (the one configuration object, from the environment), ``wire`` (queue and
task names, task ids, Redis keys, the job records that travel in messages),
``errors`` (the one error base the CLI maps to messages and exit codes) and ``paths``
(the dataset-root rule: no path outside the root is read). It imports
nothing of ``orchestrator``, ``workers`` or ``storage`` (tests/test_architecture.py).
"""
