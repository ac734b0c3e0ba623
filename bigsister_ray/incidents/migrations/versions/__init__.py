"""Revisions of the incidents schema, oldest first by number."""
