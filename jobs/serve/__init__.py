"""The serve wing: the HTTP app, file helpers, SQL sandbox, pages, web and viewer assets, and its launch."""
