"""The review report (``salcurate report``): data for each section (``data``) and the page (``build``)."""
