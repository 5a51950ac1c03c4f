"""``agegender run``: the whole stack on one machine, four OS processes over ``ipc://``.

The orchestrator starts sink, classifier and detector, waits until each reports ready on
``/readyz``, then starts capture. A watchdog restarts a service that dies (at most
``max_restarts`` within ``restart_window_s``; beyond that it gives up, stops the stack and
exits non-zero), counts restarts in ``agegender_process_restarts_total{service}`` on its
own metrics port, shows progress (frames, fps, faces, p95 latency from the sink's status
file) and prints a summary at the end (frames, faces, fps, end-to-end latency
p50/p95/p99, drops by stage and reason, scraped from every service's ``/metrics``).

SIGINT/SIGTERM stop every child within 5 s: SIGTERM to each child's process group, then
SIGKILL after a grace period. Children also get SIGTERM from the kernel if the
orchestrator itself dies (``PR_SET_PDEATHSIG``), so no process is left behind.

Modules, in the order a run uses them:

* :mod:`.options`: what to run (:class:`~.options.StackOptions`), service names, exit
  codes, parsing of ``--threads`` and ``--service-arg``;
* :mod:`.wiring`: HTTP ports, ``ipc://`` endpoints and each service's arguments;
* :mod:`.children`: one service process (start, signals, HTTP, metrics, exit reason);
* :mod:`.watchdog`: restart policy, refusals (exit code 2) and giving up;
* :mod:`.stack`: the four children together: start order, shutdown, status, summary;
* :mod:`.runner`: :func:`~.runner.run_stack`, the loop with progress bar;
* :mod:`.summary`: metrics scraping and the printed summary;
* :mod:`.command`: the ``agegender run`` click command.
"""
