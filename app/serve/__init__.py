"""`attend serve`: the SavedModels of a TensorFlow Serving model base behind TF Serving's own REST
and gRPC APIs, with dynamic batching, hot-swapped versions, Prometheus metrics and a web page.

    errors.py     TF Serving's error codes and their HTTP statuses
    options.py    the server's settings: ports, polling, limits, TF Serving's batching knobs
    batching.py   the dynamic batch scheduler (merges concurrent requests into one call)
    servable.py   one loaded version: its signatures, input checks, calls
    versions.py   the model's versions: load the latest, poll, hot-swap, status
    json_api.py   REST JSON (row and columnar formats, b64) to arrays and back
    rest.py       the REST API, the metrics page and the web page (Starlette)
    grpc_api.py   PredictionService and ModelService on tensorflow-serving-api's protos
    metrics.py    the Prometheus metrics
    server.py     starts both servers, prints their URLs, drains on Ctrl-C/SIGTERM
    command.py    the command line's arguments → ServeOptions (and `attend serve RUN_DIR`)
    page/         the web page (plain HTML and JavaScript, no build step)
"""
