"""Converters between other dataset layouts and the robomimic HDF5 layout.

One module per source (`d4rl`, `roboturk_pilot`, `momart`, `minari`, `robosuite_raw`, ...).
Each writes a new file and never modifies its input; import the module you need, nothing
heavy is imported here.
"""
