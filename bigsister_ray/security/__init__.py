"""Who may call the API, which stream URLs the service may open, and what a URL or log line may show."""

from bigsister_ray.redact import redact_text, redact_url, safe_log
from bigsister_ray.security.auth import Authenticator, Principal, load_keys
from bigsister_ray.security.urls import UrlPolicy, check_stream_url

__all__ = ["Authenticator", "Principal", "load_keys", "UrlPolicy", "check_stream_url", "redact_url", "redact_text", "safe_log"]
