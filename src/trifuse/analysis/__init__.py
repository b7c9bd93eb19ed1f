"""Byte/FLOP models, measured ceilings and roofline fractions."""
