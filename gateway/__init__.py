"""The HTTP application: settings, the app factory, the CLI, the request pipeline."""

import sys

# httpx imports its own command line (click, rich, pygments) whenever those are installed, some
# 7 MiB of RSS in every gateway process that never runs it; a None entry makes that import fail
# the way httpx expects when they are absent (its ``main`` then says to install httpx[cli]).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
