import sys

import steps
from flow import Client, RunFailedError

customer, amount = sys.argv[1], int(sys.argv[2])
with Client() as client:  # FLOW_URL and FLOW_API_TOKEN, else http://127.0.0.1:3030
    client.deploy("billing.flow", step_types=steps)  # checks the config of billing.charge steps
    run = client.start("invoice", {"customer": customer, "amount": amount})
    try:
        print(run.result(timeout=60))
    except RunFailedError as exc:
        sys.exit(f"{exc.status}: {exc.error['message']}")
