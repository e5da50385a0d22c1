"""The ``avits`` command line: the front end over the Prefect flows (``flows/``) and the library
(``avits_core``). It lives outside ``avits_core`` so that the library never depends on Prefect."""
