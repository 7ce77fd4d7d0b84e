"""The benchmarks' shared harness.

Every script in ``bench/`` imports it as ``harness`` (running ``python bench/<script>.py``
puts ``bench/`` first on ``sys.path``, so no script edits the path). One module per concern:

- ``cli``: where results and figures go, argument parsers, a script re-run in a child mode;
- ``stats``: a stopwatch, percentiles, best-of and median timings, precision at coverage;
- ``resources``: CPU and memory accounting from /proc (process, threads, PostgreSQL, box);
- ``results``: JSON results, markdown tables, matplotlib figures, the machine's description;
- ``processes``: the flywheel CLI, servers and workers as child process groups;
- ``network``: free ports, health waits, dead remotes, the API's Prometheus metrics;
- ``brokers``: Redis and Celery workers, and the empty-task rate through them;
- ``databases``: SQLite and PostgreSQL URLs, fresh schemas and databases, row counts;
- ``digits``: sklearn's digits as the project stores them, split as the benchmarks split them;
- ``workspaces``: scratch folders and prepared projects (digits, a champion, predictions).

A benchmark never imports from ``tests/``: what it needs is here, built on the product's
own surface (CLI, HTTP API, library functions) and third-party tools.
"""
