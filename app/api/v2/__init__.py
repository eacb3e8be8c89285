"""The Open Inference Protocol (KServe / Triton / MLServer "V2" REST): a transport beside /v1
onto the same registry and inference service (``routes``: the router; ``wire`` and ``tensors``:
the protocol's requests and tensors read into the service's inputs; ``infer``: its outputs from
the service's answers; ``errors``: its error shape)."""
