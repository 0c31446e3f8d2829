"""`demoset edit`: curation edits that each write a NEW file from an existing one.

Every edit reads the source read-only and writes the result under a temporary name beside
the output, renamed into place when whole: the source is never changed and an interrupted
edit leaves nothing under the output name. Filter keys are carried over (restricted to the
demos that remain), and `total`, `num_samples` and next_obs stay consistent with the arrays.
"""

from demoset.editing.demos import remove_demos, select_demos, trim_demos
from demoset.editing.keys import add_key, drop_key, rename_key
from demoset.editing.labels import relabel, set_meta
from demoset.editing.rewrite import RewriteResult

__all__ = [
    "RewriteResult",
    "add_key",
    "drop_key",
    "relabel",
    "remove_demos",
    "rename_key",
    "select_demos",
    "set_meta",
    "trim_demos",
]
