"""The control plane around the pure core. A cycle (``loop``) runs its phases in order:
``observe`` (the backend, read once), ``persist`` (what was observed, then what the core
decided, one transaction each), ``act`` (the backend asked once). Around it: when the
loop cycles (``wake``), where it runs (``loop_host``, ``loop_process``), and the one place
that starts every thread and process the server runs (``root``)."""
