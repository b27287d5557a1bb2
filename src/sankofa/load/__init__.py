"""The load generator (``sankofa loadtest``): open-model load with realistic payloads.

Modules, from the wire up:

* ``http``: keep-alive HTTP/1.1 connections driven by callbacks; ``HttpClient``
* ``engine``: open-loop (intended send times) and closed-loop request engines
* ``plan``, ``payloads``: what is sent when, built before the timed phase
* ``worker``, ``runner``: worker processes, a common start, merged results
* ``histogram``, ``report``, ``plots``: percentiles, JSON / markdown, PNG
* ``sampler``: server and generator CPU / RSS (psutil)
* ``ceiling``, ``trivial_server``, ``wrk``: the generator's own limit beside wrk
* ``cli``: ``add_loadtest_parser`` and ``run_loadtest``

Nothing here is imported by the service; psutil and matplotlib (the ``load``
extra) are imported only when sampling or plotting.
"""
