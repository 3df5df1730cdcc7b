"""System tests: the appliance as a Debian system gets it (.deb, Ansible) in debootstrap chroots; root only."""
