"""Experiments: presets, the preset comparison, sweeps, head-to-head, reports and plots.

May use every other wing (grow, train, baselines); nothing imports it but the command line.
"""
