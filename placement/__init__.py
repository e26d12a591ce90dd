"""placement: pure scoring and binding policy for ComputeUnits and DataUnits.

Owns the cost model (queue wait + bytes to move / bandwidth by affinity-tree distance + label
penalty), candidate ranking with explanations, and the late-binding decision.

May import: the standard library only. No I/O, no Redis, no fsspec, nothing from ``pilotdata``,
``transfer`` or ``agent``: it takes plain data and returns plain data.
"""
