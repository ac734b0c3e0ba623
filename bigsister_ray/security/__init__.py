"""Who may call the API, and which stream URLs the service may open."""

from bigsister_ray.security.auth import Authenticator, Principal, load_keys
from bigsister_ray.security.urls import UrlPolicy, check_stream_url

__all__ = ["Authenticator", "Principal", "load_keys", "UrlPolicy", "check_stream_url"]
