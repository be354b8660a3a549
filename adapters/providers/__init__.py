"""Provider adapters: pure wire codecs plus one thin transport call each."""
