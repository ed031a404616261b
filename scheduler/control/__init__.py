"""The control plane around the pure core: when the loop cycles (``wake``), where it runs
(``loop_host``, ``loop_process``) and the one place that starts it all (``root``)."""
