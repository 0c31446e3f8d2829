"""Seeing a dataset: plots (matplotlib), videos (imageio-ffmpeg) and a one-file HTML report.

Nothing heavy is imported here: each module imports matplotlib, Pillow or imageio inside
the functions that need them, so `import demoset.viz` is cheap.
"""
