"""Reader studies: ICC of every feature and stable-feature lists (:mod:`.reproducibility`),
contour agreement (:mod:`.metrics`: Dice, HD95), the cohort study (:mod:`.study`) and its
commands (:mod:`.commands`)."""
