"""`demoset doctor`: the problems `validate` cannot see, because the file is well formed.

`validate` checks the layout; the doctor checks the content: whether actions reproduce the
states in the simulator, whether camera frames are usable, whether demos succeed, repeat
each other or carry a shifted next_obs, whether actions saturate and observations change.
Each finding names the demos and steps it concerns and has a severity (error, warning,
info); `demoset doctor` exits 1 when any finding is an error.
"""

from demoset.doctor.findings import DoctorReport, Finding
from demoset.doctor.run import diagnose

__all__ = ["DoctorReport", "Finding", "diagnose"]
