"""Alert rules (k-of-n, hysteresis, cooldown) and notifiers (Slack, webhook, console).

Importing the package imports only the pure rules; notifiers load slack-sdk when used.
"""

from bigsister_ray.alerts.rules import DetectedEvent, IncidentEvent, ResolvedRule, RuleEngine, WindowScore, detect_events

__all__ = ["WindowScore", "IncidentEvent", "DetectedEvent", "ResolvedRule", "RuleEngine", "detect_events"]
