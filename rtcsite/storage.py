"""Static files storage for DEBUG=0: whitenoise's hashed, compressed files."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    """Rewrites CSS ``url()`` references to hashed names, but not JS ``sourceMappingURL``
    comments: vendored npm builds (face-api) name source maps that static/vendor does not
    ship, and a missing one made collectstatic fail."""

    patterns = tuple(
        (glob, rules)
        for glob, rules in CompressedManifestStaticFilesStorage.patterns
        if glob != "*.js"
    )
