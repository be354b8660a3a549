"""The gateway's pure core: decisions as values in, values out. No I/O, clock or randomness."""
