"""The one identifier rule shared by flavors, orgs, teams, nodes and jobs.

Names end up in Kubernetes object names, Ray labels and metric label values, so
they follow the DNS-label shape those systems accept.
"""

from typing import Annotated

from pydantic import StringConstraints

NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

# A job's id as the store makes it (``store.jobs.new_job_id``): the CLI tells an id from a
# name by it, and the API finds the ids a message names by it.
JOB_ID_PATTERN = r"j-[0-9a-f]{12}"
