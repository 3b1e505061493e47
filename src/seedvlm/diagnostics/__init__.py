"""Checks of the premises SEED rests on, on a real base model and world (no training):

- `seedvlm.diagnostics.teacher_signal`: clean vs noisy teacher at the object mentions of the training descriptions
  (`seedvlm teacher-signal`).
"""
