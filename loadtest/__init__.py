"""Switchboard's load tester: thousands of simulated Socket.IO clients from one machine.

Run it as ``python -m loadtest --help``. The parts, one concept each:
``protocol`` (Engine.IO/Socket.IO codec), ``client`` (the lean client),
``sioclient`` (the python-socketio one, for comparison), ``tokens``,
``spec`` (a run's options), ``stats`` (seq integrity, histograms), ``meter``
(a worker's counters), ``scenarios/`` (the worker side of each scenario),
``worker`` (a worker process), ``coordinator`` (starts workers and steps
them through the phases), ``results`` (aggregation), ``display`` (rich),
``charts`` and ``report`` (the HTML report), ``cli``.
"""
