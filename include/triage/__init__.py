"""Support ticket triage: the rules (include/policies/support_triage.yaml) and the classifier."""
