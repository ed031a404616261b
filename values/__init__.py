"""The pool's value types, pure and shared by every other package: identifiers
(``names``), flavors, nodes and job specs (``domain``), orgs and quotas (``quotas``), the
core's input and output (``snapshot``, ``decisions``), the job lifecycle table
(``lifecycle``), validation errors that name the field (``errors``), and the wire schema
of the node agents' reports (``reports``). Nothing here imports ``scheduler``, ``quota``
or ``agents``; they all import from here."""
