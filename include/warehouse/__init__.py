"""The PostgreSQL analytics tables the lake is loaded into."""
