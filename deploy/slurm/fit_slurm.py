"""Fit a Gaussian mixture on a Slurm cluster with dask-jobqueue.

Run it on a login node (or in a small batch job) of a cluster whose nodes share a file
system with it; it submits Slurm jobs that each start Dask workers, fits, and the
workers' jobs end when it exits. The checkpoint lives on the shared file system, so a
fit that was cut short (walltime, preemption, Ctrl-C) continues when the same command
is run again (``resume=True``).

    pip install 'dask-jobqueue>=0.9' cryptography      # next to dem
    python deploy/slurm/fit_slurm.py /scratch/$USER/data.zarr --var X -k 8 \\
        --checkpoint /scratch/$USER/fits/gmm.zarr --jobs 4 --account myproject

Traffic between the scheduler (here), the workers and this client is encrypted and
authenticated with a throwaway certificate (``Security.temporary()``), since the
nodes' network is shared with other users.

Adjust ``--cores``, ``--memory``, ``--walltime``, ``--partition`` and ``--interface``
to your site; ``--print-job`` shows the batch script without submitting anything.
"""

from __future__ import annotations

import argparse

import dem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="Zarr store on the shared file system")
    parser.add_argument("--var", required=True, help="variable holding samples × features")
    parser.add_argument("-k", "--n-components", type=int, required=True)
    parser.add_argument("--covariance-type", default="full")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", required=True, help="checkpoint on the shared file system")
    parser.add_argument("--jobs", type=int, default=4, help="Slurm jobs of workers")
    parser.add_argument("--cores", type=int, default=8, help="cores per job")
    parser.add_argument("--memory", default="32GB", help="memory per job")
    parser.add_argument("--walltime", default="02:00:00")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--interface", default=None, help="network interface, e.g. ib0")
    parser.add_argument("--print-job", action="store_true", help="print the job script and exit")
    args = parser.parse_args()

    from dask_jobqueue import SLURMCluster
    from distributed import Client
    from distributed.security import Security

    cluster = SLURMCluster(
        cores=args.cores,
        processes=args.cores,  # one single-threaded worker process per core
        memory=args.memory,
        walltime=args.walltime,
        queue=args.partition,
        account=args.account,
        interface=args.interface,
        security=Security.temporary(),
        log_directory="dask-logs",
    )
    if args.print_job:
        print(cluster.job_script())
        cluster.close()
        return
    with cluster, Client(cluster) as client:
        cluster.scale(jobs=args.jobs)
        print(f"Waiting for workers; dashboard: {client.dashboard_link}", flush=True)
        client.wait_for_workers(1)

        def report(info: dem.IterationInfo) -> None:
            print(
                f"run {info.run} iteration {info.iteration}: loglik {info.loglik:.8f} "
                f"change {info.change:.3e} ({info.seconds:.1f} s)",
                flush=True,
            )

        model = dem.GaussianMixture(
            args.n_components,
            covariance_type=args.covariance_type,
            max_iter=args.max_iter,
            random_state=args.seed,
            checkpoint=args.checkpoint,
            resume=True,
            callback=report,
        )
        model.fit(args.store, variable=args.var)
        print(
            f"converged={model.converged_} after {model.n_iter_} iterations; "
            f"checkpoint {args.checkpoint} (inspect: dem show {args.checkpoint})"
        )


if __name__ == "__main__":
    main()
