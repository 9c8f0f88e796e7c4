"""lm-eval's own HellaSwag preprocessing, reused so that local data is scored exactly as the hub task."""

from lm_eval.tasks.hellaswag.utils import process_docs

__all__ = ["process_docs"]
