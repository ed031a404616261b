"""The one identifier rule shared by flavors, orgs, teams, nodes and jobs.

Names end up in Kubernetes object names, Ray labels and metric label values, so
they follow the DNS-label shape those systems accept.
"""

from typing import Annotated

from pydantic import StringConstraints

NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
