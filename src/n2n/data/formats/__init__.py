"""Readers for the standard on-disk formats of the built-in data sets.

Each reader takes the folder that holds a data set's standard files and returns
its (train, test) splits as uint8 N x C x H x W images and int64 labels. Every
problem with a file (missing, truncated, wrong format) raises DataError naming it.
"""
