"""AnySat Explorer Panel app (``panel serve app``); lands with the app issue."""
