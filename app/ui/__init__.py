"""The dashboard at /ui: one HTML page with plain JS and inline SVG (static/), no build step, no CDN."""
