-- wrk script: POST the JSON body in $BODY (bench/api.sh sets it) to the URL given on the command line.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BODY")
