"""The exact foundations: Gaussian mixtures and their presets, schedules and interpolants, time
grids, the trajectory record, the model interface and the exact model. Imports nothing else of explorer."""
