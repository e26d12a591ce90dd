"""BigJob's Pilot-Data scripts: DataUnits placed on two PilotData by label, replication
(``number_of_replicas`` and ``pd.submit_data_unit(data_unit=du)``), reconnecting to a DataUnit by URL
from a second process, and compute-data co-placement with output staging and export.
"""

from __future__ import annotations

import json
from pathlib import Path

from pilotdata.records import complete_replicas
from pilotdata.states import Kind
from tests.bigjob.conftest import ScriptEnv, lines_with

TWO_STORES = '''
    import os
    from pilotdata import PilotDataService, ComputeDataService, State

    COORDINATION_URL = os.environ["COORDINATION_URL"]
    base_dir = os.path.join(os.getcwd(), "data1")
    os.makedirs(base_dir)
    for name in ("a.txt", "b.txt"):
        with open(os.path.join(base_dir, name), "w") as f:
            f.write("content of %s\\n" % name)
    absolute_url_list = [os.path.join(base_dir, i) for i in sorted(os.listdir(base_dir))]

    pilot_data_service = PilotDataService(coordination_url=COORDINATION_URL)
    ps1 = pilot_data_service.create_pilot({
        "service_url": "file://" + os.path.join(os.getcwd(), "pilotdata-1"),
        "size": 100,
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine-1",
    })
    ps2 = pilot_data_service.create_pilot({
        "service_url": "file://" + os.path.join(os.getcwd(), "pilotdata-2"),
        "size": 100,
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine-2",
    })
    compute_data_service = ComputeDataService()
    compute_data_service.add_pilot_data_service(pilot_data_service)
    du1 = compute_data_service.submit_data_unit({
        "file_urls": absolute_url_list,
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine-1",
    })
    du2 = compute_data_service.submit_data_unit({
        "file_urls": [absolute_url_list[0]],
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine-2",
    })
    compute_data_service.wait()
    du1.export(os.path.join(os.getcwd(), "pilot-data-export"))
    print("PD", ps1.get_url(), ps2.get_url())
    print("DU", du1.get_url(), du1.get_state(), " ".join(du1.list_pilot_data()))
    print("DU", du2.get_url(), du2.get_state(), " ".join(du2.list_pilot_data()))
    compute_data_service.cancel()
    pilot_data_service.cancel()
'''


def test_data_units_go_to_the_pilot_data_with_their_labels(bj: ScriptEnv) -> None:
    out = bj.run(TWO_STORES)
    ps1, ps2 = lines_with("PD", out)[0].split()
    (du1, state1, on1), (du2, state2, on2) = (line.split() for line in lines_with("DU", out))
    assert (state1, on1, state2, on2) == ("Running", ps1, "Running", ps2)
    export = bj.work / "pilot-data-export"
    assert sorted(p.name for p in export.iterdir()) == ["a.txt", "b.txt"]
    assert (export / "b.txt").read_text() == "content of b.txt\n"
    assert (bj.work / "pilotdata-1" / du1 / "a.txt").read_text() == "content of a.txt\n"
    assert not (bj.work / "pilotdata-2" / du1).exists() and (bj.work / "pilotdata-2" / du2 / "a.txt").exists()


REPLICATION = '''
    import os
    from pilotdata import PilotDataService, State
    from pilotdata.errors import DescriptionError

    COORDINATION_URL = os.environ["COORDINATION_URL"]
    base_dir = os.path.join(os.getcwd(), "data1")
    os.makedirs(base_dir)
    for i in range(3):
        with open(os.path.join(base_dir, "part-%d.dat" % i), "wb") as f:
            f.write(os.urandom(1000 * (i + 1)))
    absolute_url_list = [os.path.join(base_dir, i) for i in sorted(os.listdir(base_dir))]

    pilot_data_service = PilotDataService(coordination_url=COORDINATION_URL)
    def store(n, machine):
        return pilot_data_service.create_pilot({
            "service_url": "file://" + os.path.join(os.getcwd(), "pilotdata-%d" % n),
            "size": 100,
            "affinity_datacenter_label": "eu-de-south",
            "affinity_machine_label": machine,
        })
    pd1, pd2, pd3 = store(1, "mymachine-1"), store(2, "mymachine-2"), store(3, "mymachine-2")

    # two replicas: pd1, where it is submitted, and one more chosen by the DU's labels
    du = pd1.submit_data_unit({"file_urls": absolute_url_list, "number_of_replicas": 2,
                               "affinity_datacenter_label": "eu-de-south", "affinity_machine_label": "mymachine-2"})
    du.wait()
    print("TWO", du.get_url(), " ".join(sorted(du.list_pilot_data())))
    # BigJob's replication call puts it on one more
    missing = [pd for pd in (pd2, pd3) if pd.get_url() not in du.list_pilot_data()][0]
    missing.submit_data_unit(data_unit=du)
    du.wait()
    print("THREE", " ".join(sorted(du.list_pilot_data())))
    print("PDS", pd1.get_url(), pd2.get_url(), pd3.get_url())
    try:
        pd1.submit_data_unit({"file_urls": absolute_url_list, "number_of_replicas": 4})
    except DescriptionError as exc:
        print("REFUSED", exc.field, exc)
    pilot_data_service.cancel()
'''


def test_replication_with_number_of_replicas_and_submit_data_unit(bj: ScriptEnv) -> None:
    out = bj.run(REPLICATION)
    du, two = lines_with("TWO", out)[0].split(" ", 1)
    pd1, pd2, pd3 = lines_with("PDS", out)[0].split()
    assert pd1 in two.split() and len(two.split()) == 2 and set(two.split()) < {pd1, pd2, pd3}
    assert set(lines_with("THREE", out)[0].split()) == {pd1, pd2, pd3}
    source = bj.work / "data1"
    for n in (1, 2, 3):
        copy = bj.work / f"pilotdata-{n}" / du
        assert sorted(p.name for p in copy.iterdir()) == ["part-0.dat", "part-1.dat", "part-2.dat"]
        assert (copy / "part-2.dat").read_bytes() == (source / "part-2.dat").read_bytes()
    (refused,) = lines_with("REFUSED", out)
    assert refused.startswith("number_of_replicas number_of_replicas: 4 replicas asked for, but only 3")
    assert [d.id for d in bj.records(Kind.DU)] == [du]  # the refused one recorded nothing


FIRST = '''
    import os
    from pilotdata import PilotDataService

    COORDINATION_URL = os.environ["COORDINATION_URL"]
    with open("test.txt", "w") as f:
        f.write("reconnect me\\n")
    pilot_data_service = PilotDataService(coordination_url=COORDINATION_URL)
    pd = pilot_data_service.create_pilot({"service_url": "file://" + os.path.join(os.getcwd(), "pd-first"),
                                          "size": 100})
    du = pd.submit_data_unit({"file_urls": [os.path.join(os.getcwd(), "test.txt")]})
    du.wait()
    print("URLS", pilot_data_service.url, pd.get_url(), du.get_url())
'''

SECOND = '''
    import os, sys, json
    from pilotdata import PilotDataService, PilotData, DataUnit, State

    COORDINATION_URL = os.environ["COORDINATION_URL"]
    pds_url, pd_url, reconnect_url = sys.argv[1:4]
    pilot_data_service = PilotDataService(coordination_url=COORDINATION_URL)
    pd_new = pilot_data_service.create_pilot({
        "service_url": "file://" + os.path.join(os.getcwd(), "pilotdata-reconnect"),
        "size": 100,
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine-1",
    })
    du = DataUnit(du_url=reconnect_url)
    du.add_pilot_data(pd_new)
    print("STATE", du.get_state())
    print("LIST", json.dumps(du.list()))
    old = PilotDataService(coordination_url=COORDINATION_URL, pds_url=pds_url)
    print("SAME", old.get_url() == pds_url, PilotData(pd_url=pd_url).get_du(reconnect_url).get_url())
'''


def test_reconnect_to_a_data_unit_by_url_from_a_second_process(bj: ScriptEnv) -> None:
    urls = lines_with("URLS", bj.run(FIRST, name="first"))[0].split()
    out = bj.run(SECOND, *urls, name="second")
    pds_url, pd_url, du_url = urls
    assert lines_with("STATE", out) == ["Running"]
    listing = json.loads(lines_with("LIST", out)[0])
    assert set(listing) == {"test.txt"} and len(listing["test.txt"]["pilot_data"]) == 2
    assert lines_with("SAME", out) == [f"True {du_url}"]
    assert (bj.work / "pilotdata-reconnect" / du_url / "test.txt").read_text() == "reconnect me\n"
    (record,) = bj.records(Kind.DU)
    assert len(complete_replicas(record)) == 2 and pd_url in complete_replicas(record)


CO_PLACEMENT = '''
    import os
    from pilotdata import PilotComputeService, PilotDataService, ComputeDataService, State

    COORDINATION_URL = os.environ["COORDINATION_URL"]
    with open("test.txt", "w") as f:
        f.write("line one\\nline two\\n")

    pilot_compute_service = PilotComputeService(coordination_url=COORDINATION_URL)
    for machine in ("mymachine-1", "mymachine-2"):
        pilot_compute_service.create_pilot(pilot_compute_description={
            "service_url": "fork://localhost",
            "number_of_processes": 1,
            "working_directory": os.path.join(os.getcwd(), "work-" + machine),
            "affinity_datacenter_label": "eu-de-south",
            "affinity_machine_label": machine,
        })
    pilot_data_service = PilotDataService(coordination_url=COORDINATION_URL)
    pilot_data_service.create_pilot(pilot_data_description={
        "service_url": "file://" + os.path.join(os.getcwd(), "pilot-data"),
        "size": 100,
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine-1",
    })
    compute_data_service = ComputeDataService()
    compute_data_service.add_pilot_compute_service(pilot_compute_service)
    compute_data_service.add_pilot_data_service(pilot_data_service)

    data_unit = compute_data_service.submit_data_unit({
        "file_urls": [os.path.join(os.getcwd(), "test.txt")],
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine-1",
    })
    compute_unit = compute_data_service.submit_compute_unit({
        "executable": "/bin/cat",
        "arguments": ["test.txt"],
        "number_of_processes": 1,
        "output": "stdout.txt",
        "error": "stderr.txt",
        "input_data": [data_unit.get_url()],
        "output_data": [{data_unit.get_url(): ["std*"]}],
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine-1",
    })
    compute_data_service.wait()
    data_unit.export(os.path.join(os.getcwd(), "output"))
    print("CU", compute_unit.get_state(), compute_unit.get_details()["pilot"])
    print("DU", data_unit.get_state(), " ".join(sorted(data_unit.list())))
    compute_data_service.cancel()
    pilot_data_service.cancel()
    pilot_compute_service.cancel()
'''


def test_compute_and_data_placed_together_and_outputs_exported(bj: ScriptEnv) -> None:
    out = bj.run(CO_PLACEMENT)
    ((state, pilot),) = [line.split() for line in lines_with("CU", out)]
    assert state == "Done"
    labels = {p.id: p.data["labels"]["machine"] for p in bj.records(Kind.PILOT)}
    assert labels[pilot] == "mymachine-1"
    assert lines_with("DU", out) == ["Running stderr.txt stdout.txt test.txt"]
    output = bj.work / "output"
    assert (output / "stdout.txt").read_text() == "line one\nline two\n"
    assert (output / "test.txt").read_text() == (output / "stdout.txt").read_text()
    assert (output / "stderr.txt").read_text() == ""
    assert Path(bj.work / "pilot-data").is_dir()


METHODS = '''
    import os
    from pilotdata import PilotDataService, PilotData, DataUnit, ComputeDataService, State
    from pilotdata import DataUnitDescription, PilotDataDescription
    from pilotdata.errors import DescriptionError, NotFoundError, StoreError

    COORDINATION_URL = os.environ["COORDINATION_URL"]
    for name, text in (("a.txt", "alpha\\n"), ("b.txt", "beta\\n"), ("c.txt", "gamma\\n")):
        with open(name, "w") as f:
            f.write(text)
    here = os.getcwd()
    pds = PilotDataService(coordination_url=COORDINATION_URL)
    pd1 = pds.create_pilot({"service_url": "file://" + os.path.join(here, "pd1")})
    pd2 = pds.create_pilot({"service_url": "file://" + os.path.join(here, "pd2")})
    pdd = PilotDataDescription()                         # BigJob's attribute-style descriptions
    pdd.service_url = "file://" + os.path.join(here, "pd3")
    pdd.size = ""
    pd3 = pds.create_pilot(pdd)

    # BigJob's DataUnit(data_unit_description=...): on no PilotData until add_pilot_data
    dud = DataUnitDescription()
    dud["file_urls"] = [os.path.join(here, "a.txt")]
    du = DataUnit(data_unit_description=dud)
    print("NEW", du.get_state(), du.list_pilot_data())
    du.add_files([os.path.join(here, "b.txt")])          # kept for the upload
    du.add_pilot_data(pd1)
    print("PLACED", du.get_state(), sorted(du.list()), du.list_pilot_data() == [pd1.get_url()])
    du.add_files([os.path.join(here, "c.txt")])           # into the replica
    try:
        du.add_files([os.path.join(here, "a.txt")])
    except StoreError as exc:
        print("TWICE", exc)
    du.remove_files(["b.txt"])
    try:
        du.remove_files(["nope.txt"])
    except NotFoundError as exc:
        print("NOFILE", exc)
    print("FILES", " ".join(sorted(du.list())))

    pd1.copy_du(du, pd2)
    pd3.put_du(du)
    print("ON", sorted(du.list_pilot_data()) == sorted([pd1.url, pd2.url, pd3.url]),
          sorted(p.get_url() for p in du.get_pilot_data()) == sorted([pd1.url, pd2.url, pd3.url]))
    print("URLFOR", pd2.url_for_du(du))
    print("GETDU", pd2.get_du(du.get_url()).get_url() == du.get_url(), PilotData(pd_url=pd3.url).get_du("du-none"))
    print("LISTED", [d.get_url() for d in pd3.list_data_units()] == [du.get_url()])
    pd2.export_du(du, os.path.join(here, "exported"))
    pd3.remove_du(du)
    pd1.wait(); pds.wait()
    print("AFTER", sorted(du.list_pilot_data()) == sorted([pd1.url, pd2.url]))
    du.cancel()                                            # BigJob's cancel: closed, files kept
    print("CLOSED", du.get_state(), sorted(os.listdir(os.path.join(here, "pd1", du.get_url()))))
    for call in (lambda: DataUnit(), lambda: pd1.submit_data_unit({"file_urls": []}, data_unit=du)):
        try:
            call()
        except DescriptionError as exc:
            print("BAD", exc.field)

    cds = ComputeDataService()
    cds.add_pilot_data_service(pds)
    twice = cds.submit_data_unit({"file_urls": [os.path.join(here, "a.txt")], "number_of_replicas": 2})
    cds.wait()
    print("CDS", len(twice.list_pilot_data()), cds.get_data_unit(twice.get_url()).get_url() == twice.get_url(),
          cds.get_data_unit("du-none"))
'''


def test_bigjob_pilot_data_and_data_unit_methods(bj: ScriptEnv) -> None:
    out = bj.run(METHODS)
    assert lines_with("NEW", out) == ["New []"]
    assert lines_with("PLACED", out) == ["Running ['a.txt', 'b.txt'] True"]
    assert "already has a file 'a.txt'" in lines_with("TWICE", out)[0]
    assert "has no file 'nope.txt'" in lines_with("NOFILE", out)[0]
    assert lines_with("FILES", out) == ["a.txt c.txt"]
    assert lines_with("ON", out) == ["True True"]
    (du,) = [d.id for d in bj.records(Kind.DU)][:1]
    assert lines_with("URLFOR", out) == [f"file://{bj.work / 'pd2'}/{du}"]
    assert lines_with("GETDU", out) == ["True None"]
    assert lines_with("LISTED", out) == ["True"]
    assert sorted(p.name for p in (bj.work / "exported").iterdir()) == ["a.txt", "c.txt"]
    assert (bj.work / "exported" / "c.txt").read_text() == "gamma\n"
    assert not (bj.work / "pd3" / du).exists() and (bj.work / "pd2" / du / "c.txt").exists()
    assert not (bj.work / "pd1" / du / "b.txt").exists()
    assert lines_with("AFTER", out) == ["True"]
    assert lines_with("CLOSED", out) == ["Done ['a.txt', 'c.txt']"]
    assert lines_with("BAD", out) == ["du_url", "data_unit"]
    assert lines_with("CDS", out) == ["2 True None"]
