"""Training data: LLaVA-Instruct conversations -> records (`prepare`), records -> tokenized examples (`dataset`)."""

from seedvlm.data.prepare import PrepareReport, conversations_to_records, prepare, sample_records, strip_placeholder

__all__ = ["PrepareReport", "conversations_to_records", "prepare", "sample_records", "strip_placeholder"]
