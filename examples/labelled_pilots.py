"""Two labelled pilots; ten ComputeUnits follow their data.

Two "sites" (affinity_datacenter_label site-a and site-b) each have a pilot and a PilotData. One
DataUnit lives at each site; five CUs read the first, five the second, each labelled with its data's
site. Placement sends every CU to the pilot at its data's site: nothing crosses sites. (Without the
labels, placement would still prefer the data's site, but for data this small it may decide that
moving 2 MB is cheaper than waiting for a busy pilot, and run a CU at the other site.)

    python examples/labelled_pilots.py [WORKDIR]
"""

import collections
import os
import sys
import tempfile

from pilotdata import ComputeDataService, PilotComputeService, PilotDataService, State

workdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="pd-labels-")
pcs, pds = PilotComputeService(), PilotDataService()
cds = ComputeDataService()
cds.add_pilot_compute_service(pcs)
cds.add_pilot_data_service(pds)

pilot_site, data_units = {}, {}
for site in ("site-a", "site-b"):
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2,
                              "working_directory": os.path.join(workdir, f"agent-{site}"),
                              "affinity_datacenter_label": site})
    pilot_site[pilot.id] = site
    pd = pds.create_pilot({"service_url": os.path.join(workdir, f"pd-{site}"), "affinity_datacenter_label": site})
    data = os.path.join(workdir, f"{site}.dat")
    with open(data, "wb") as f:
        f.write(os.urandom(2_000_000))
    data_units[site] = cds.submit_data_unit({"file_urls": [data], "affinity_datacenter_label": site},
                                            pilot_data=pd)
for du in data_units.values():
    du.wait()
for pilot in pcs.list_pilots():
    pilot.wait(state="Running")  # both pilots up, so placement sees both

cus = {}
for i in range(10):
    site = "site-a" if i % 2 == 0 else "site-b"
    cus[cds.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", f"sha256sum {site}.dat"], "shell": False,
                                 "input_data": [data_units[site].id],
                                 "affinity_datacenter_label": site})] = site
cds.wait()

ran: collections.Counter[tuple[str, str]] = collections.Counter()
for cu, site in cus.items():
    details = cu.get_details()
    ran[(site, pilot_site[details["pilot"]])] += 1
for (data_site, pilot_site_name), n in sorted(ran.items()):
    print(f"CUs reading {data_site} data ran at {pilot_site_name}: {n}")
followed = sum(n for (a, b), n in ran.items() if a == b)
print(f"followed their data: {followed}/10")
pcs.cancel()
sys.exit(0 if all(cu.get_state() == State.Done for cu in cus) and followed == 10 else 1)
