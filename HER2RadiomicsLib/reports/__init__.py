"""Reports: HTML building blocks (:mod:`.html`), the per-patient report (:mod:`.case`), the
study report (:mod:`.study`) and the demo report (:mod:`.demo`)."""
