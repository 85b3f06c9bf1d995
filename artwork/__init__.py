"""Everything about pixels: safe decoding of uploads, renditions, image features, the
content-addressed blob store and the catalog tables (titles, variants, renditions)."""
