# Stand-in for python:3.11-slim: Debian's Python 3 on the debootstrap'd base, with `python`
# and a venv-capable interpreter where the official image has them. Built by build.sh.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
# The CA bundle build.sh copied from the build host: pip must trust the same mirror/proxy
# the host does. It is added to Debian's bundle, not written over it.
COPY build-ca.crt /usr/local/share/ca-certificates/build-ca.crt
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python
# pip vendors its own CA list; point it (and requests) at the system bundle instead.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
