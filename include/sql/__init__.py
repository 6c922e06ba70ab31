"""SQL shared by the components: versioned schema migrations."""
